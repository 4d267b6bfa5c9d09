"""A run on disk: the columns of its table (schema.py), its folder as it is written and read
(storage.py), and what joins or converts run folders (merge.py, pytest_benchmark.py)."""

from .schema import (CASE_KEY, COLUMNS, DTYPE_CEILING, HOST_ANCHOR_SHAPE, IDENTITY, INT8_CEILING, LEGACY_ROLES,
                     SCHEMA_VERSION, Measurement)
from .storage import (SAMPLES, SAMPLES_GZ, RunFolderError, RunWriter, compress_samples, has_samples, load_run,
                      read_cases, read_lines, read_samples, samples_path, to_frame, utc_now, with_roles,
                      write_samples)

__all__ = ["CASE_KEY", "COLUMNS", "DTYPE_CEILING", "HOST_ANCHOR_SHAPE", "IDENTITY", "INT8_CEILING", "LEGACY_ROLES",
           "SCHEMA_VERSION", "Measurement", "SAMPLES", "SAMPLES_GZ", "RunFolderError", "RunWriter", "compress_samples", "has_samples",
           "load_run", "read_cases", "read_lines", "read_samples", "samples_path", "to_frame", "utc_now",
           "with_roles", "write_samples"]
