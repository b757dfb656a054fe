"""vmem: the memory layer of an OS-style memory kernel for LLM agents."""
