"""The error every reader of the product's data files raises (fact registry, seed bank, datasets)."""

from __future__ import annotations

from pathlib import Path


class DatasetInputError(Exception):
    """Bad input: a file that cannot be read, a malformed line, a record that breaks the schema."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")
