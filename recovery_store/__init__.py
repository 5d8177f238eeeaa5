"""Read-only inspection of the dataflow's Bytewax recovery partitions."""
