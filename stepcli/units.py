"""Human-readable sizes, for the messages of every layer."""


def human(nbytes: float) -> str:
    """`1536` -> `'1.5 KiB'`: binary units up to TiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"
