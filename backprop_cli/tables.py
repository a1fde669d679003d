"""Tables for other tools: a study's cell table as Parquet (through pyarrow, the `parquet`
extra), typed columns that pandas, polars and DuckDB read without backprop. A painter job,
so the import of pyarrow (about 0.1 s) happens on the drawing worker's core."""

from __future__ import annotations

import importlib.util
import io
from typing import Any


def have_parquet() -> bool:
    """Whether pyarrow is installed (looked up without importing it)."""
    return importlib.util.find_spec("pyarrow") is not None


def parquet(columns: dict[str, list[Any]]) -> bytes:
    """The columns {name: values} as the bytes of a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()
