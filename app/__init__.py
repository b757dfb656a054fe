"""vmem.app: the application above the kernel: the ``vmem`` command line, the demo, the
inspector (text and HTML), the context map and the benchmark runner.

Layers, one way: app -> vmem.kernel -> vmem -> the C core. Nothing below imports this.
"""
