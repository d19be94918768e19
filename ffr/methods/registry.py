from ffr.registry import Registry

METHODS: Registry = Registry("stage-2 method", plugins="ffr.methods")
