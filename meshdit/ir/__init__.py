"""The vocabulary the compile-time stages share: the model graph, meshdit's own graph ops, op classes, tiles and
token streams. Passes, sharding and lowering all build on it; it depends on none of them."""
