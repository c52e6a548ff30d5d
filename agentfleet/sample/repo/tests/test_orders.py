import unittest

from app.orders import list_orders


class ListOrders(unittest.TestCase):
    def test_filters_by_customer(self):
        self.assertEqual([o["id"] for o in list_orders("ada")], [1, 3])
