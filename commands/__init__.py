"""The top floor: the programs a user runs besides the dataflow itself.

Each may import any floor below (config, operators, sources, sinks, telemetry,
reference, dataflows); nothing imports this package.
"""
