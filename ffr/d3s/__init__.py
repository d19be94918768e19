"""D3S on top of a generation output: shift splits (:mod:`ffr.datasets.d3s_splits`), per-background evaluation of
classifiers as a Ray Data job (:mod:`ffr.d3s.evaluate`), and the embedded offline D3S (:mod:`ffr.d3s.embedded`)."""
