"""The application layer above the kernel (to be installed as vmem.app)."""
