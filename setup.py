from setuptools import setup

# The C core is compiled by cffi (out-of-line API mode); everything else is in pyproject.toml.
setup(cffi_modules=["csrc/build_vmcore.py:ffibuilder"])
