"""nasbench-ptb: a tabular NAS benchmark of recurrent cells on Penn Treebank (numpy + h5py only)."""
__version__ = "0.1.0"
