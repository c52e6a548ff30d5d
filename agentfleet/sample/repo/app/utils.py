def money(cents):
    return f"${cents / 100:.2f}"


def slug(text):
    return "-".join(text.lower().split())
