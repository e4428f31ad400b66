from typing_extensions import Buffer

def parse(
    offsets: Buffer,
    data: Buffer,
    first: int,
    count: int,
    spec: tuple[tuple[bytes, int, int, int, int, tuple[bytes, ...], int, int, int | bytes | None, bool], ...],
    earliest_us: int,
    latest_us: int,
    max_float: float,
    max_text: int,
    tokens: tuple[int, ...],
) -> tuple[bytes, list[tuple[bytes, ...] | None]]: ...
