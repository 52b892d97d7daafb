"""User formulas as models (parser to follow in the formula issue)."""

from nlfit.errors import ModelError


class FormulaModel:
    @classmethod
    def parse(cls, text: str, x_names=("x",), y_name: str = "y"):
        raise ModelError(f"formula models are not supported yet: '{text}'")
