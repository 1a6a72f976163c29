raise ImportError("edgecore_broken needs libfrobnicate.so, which is not installed")
