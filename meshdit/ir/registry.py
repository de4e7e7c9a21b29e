"""A registry of per-op rules: one per stage (sharding rules, lowering rules), keyed by op, each rule registered by
a decorator next to its siblings. Registering an op twice is an error, so two rules can never race for an op."""

from __future__ import annotations


class Registry(dict):
    def __init__(self, what: str):
        super().__init__()
        self.what = what  # "sharding rule", "lowering rule": for the error message

    def register(self, *targets):
        """Decorator: the function is the rule of every op in `targets`."""

        def register(fn):
            for target in targets:
                if target in self:
                    raise ValueError(f"{target} has two {self.what}s: {self[target].__name__} and {fn.__name__}")
                self[target] = fn
            return fn

        return register
