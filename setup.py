"""The C extension; everything else is in pyproject.toml.

`unitcost.ingest._quickparse` parses and checks plain JSON event lines in about a quarter of
the CPU of the SQL path it stands in for (0.8 s against 3.0 s per million lines,
docs/benchmarks.md). It needs a C compiler at install time; without one the install goes on
(`optional`), and ingest takes the SQL path, slower but the same.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "unitcost.ingest._quickparse",
            ["src/unitcost/ingest/_quickparse.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        )
    ]
)
