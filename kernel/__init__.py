"""kernel: the scheduler of vmem: agent step loop, memory functions, queue manager, drivers."""
