"""Files a scripted model answer holds: three BE_MODELS files, the first with quotes, a
docstring and an escaped backslash in its content (what a cut answer or a repair must keep
intact)."""

FILES = [
    ("backend/app/models/car.py", 'class Car:\n    """A car."""\n    name = "a\\\\b"\n' * 4),
    ("backend/app/models/owner.py", "class Owner:\n    pass\n" * 6),
    ("backend/app/models/trip.py", "class Trip:\n    pass\n" * 6),
]
