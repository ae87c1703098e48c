"""The oracle: reference gradients for your own backprop, and a referee that says what is wrong.

NumPy in, NumPy out, float64 inside whatever your dtype.  For dense layers l = 0 … L−1,
in jaxmlp's own convention (W⁽ˡ⁾ of shape (n_out, n_in), rows of x are examples):

    z⁽ˡ⁾ = a⁽ˡ⁻¹⁾ W⁽ˡ⁾ᵀ + b⁽ˡ⁾,   a⁽ˡ⁾ = f(z⁽ˡ⁾),   a⁽⁻¹⁾ = x,   ŷ = a⁽ᴸ⁻¹⁾
    δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ = (δ⁽ˡ⁺¹⁾ W⁽ˡ⁺¹⁾) ⊙ f′(z⁽ˡ⁾),  dW⁽ˡ⁾ = δ⁽ˡ⁾ᵀ a⁽ˡ⁻¹⁾,  db⁽ˡ⁾ = Σ_rows δ⁽ˡ⁾

Your convention may differ in layout (W (in, out), columns as examples) and in scale (a
summed loss, ½ or not, λ/(2m)ΣW²): declare it with a preset (`cs231n`,
`deeplearning_ai`, `nielsen`, `sklearn`, `jaxmlp`) or a `Convention`, and the
reference is given in your terms; when your gradients match another convention exactly,
the report says so instead of calling correct code a bug.

| module | holds |
| --- | --- |
| `conventions` | `Convention`, the presets `CONVENTIONS` |
| `reference` | `reference_gradients`: jaxmlp's manual backprop, in float64, in your convention |
| `rules` | `compare` and the diagnosis rule table `RULES` |
| `report` | `Entry`, `OracleReport` |
| `probe` | `probe`: your whole forward/backward function on generated configurations |
| `layers` | `check_layer`: one CS231n-style layer's forward/backward |
| `junit` | JUnit XML for autograders: one test case per configuration and layer |
| `cli` | `jaxmlp check` for `.npz` dumps and Python targets, `--json`, `--junit` |
"""
from jaxmlp.oracle.conventions import CONVENTIONS, Convention
from jaxmlp.oracle.reference import LAYOUTS, reference_gradients
from jaxmlp.oracle.report import Entry, OracleReport
from jaxmlp.oracle.rules import RULES, compare, gradients_from
from jaxmlp.oracle.probe import ProbeReport, ProbeResult, probe
from jaxmlp.oracle.layers import LayerReport, check_layer
from jaxmlp.oracle.cli import add_check_arguments, main, run_check

__all__ = ["reference_gradients", "compare", "gradients_from", "probe", "ProbeReport",
           "ProbeResult", "check_layer", "LayerReport", "OracleReport", "Entry",
           "Convention", "CONVENTIONS", "RULES", "LAYOUTS", "add_check_arguments",
           "run_check", "main"]
