"""Which model a request's `model` names: every model's name, aliases and adapters route to one model only."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .model import GatewayError

if TYPE_CHECKING:
    from .model import Backend


class Registry:
    """The models by name and the names that route to each."""

    def __init__(self) -> None:
        self.by_name: dict[str, Backend] = {}
        self.routes: dict[str, str] = {}

    def add(self, b: Backend) -> None:
        """b's names taken; BadInput (nothing changed) where one is taken already."""
        from ..errors import BadInput

        for n in b.entry.names:
            if n in self.routes and self.routes[n] != b.name:
                raise BadInput(f"the model name '{n}' already routes to '{self.routes[n]}'.")
        if b.name in self.by_name:
            raise BadInput(f"a model named '{b.name}' is served already.")
        self.by_name[b.name] = b
        for n in b.entry.names:
            self.routes[n] = b.name

    def add_name(self, b: Backend, name: str) -> None:
        """One name more for b (an adapter loaded at run time); GatewayError 409 where another model has it."""
        if self.routes.get(name, b.name) != b.name:
            raise GatewayError(409, f"the name '{name}' already routes to '{self.routes[name]}'.",
                               "invalid_request_error", code="name_taken")
        self.routes[name] = b.name

    def drop_name(self, b: Backend, name: str) -> None:
        if self.routes.get(name) == b.name:
            del self.routes[name]

    def forget(self, b: Backend) -> bool:
        """b's names route nowhere; False where b was not registered (forgotten already)."""
        for n in (*b.entry.names, *b.adapters):
            if self.routes.get(n) == b.name:
                self.routes.pop(n)
        if self.by_name.get(b.name) is not b:
            return False
        del self.by_name[b.name]
        return True

    def route(self, model: object) -> Backend:
        """The model a request names; 404 in OpenAI's shape, naming those served, where none answers to it."""
        if not isinstance(model, str) or model not in self.routes:
            known = ", ".join(sorted(self.routes)) or "none"
            raise GatewayError(404, f"The model `{model}` does not exist. Models served here: {known}.",
                               "invalid_request_error", code="model_not_found")
        return self.by_name[self.routes[model]]
