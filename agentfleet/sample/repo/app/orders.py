"""Orders: the service's core data and queries."""

ORDERS = [
    {"id": 1, "customer": "ada", "total": 30},
    {"id": 2, "customer": "bob", "total": 12},
    {"id": 3, "customer": "ada", "total": 7},
]


def list_orders(customer=None):
    return [o for o in ORDERS if customer is None or o["customer"] == customer]
