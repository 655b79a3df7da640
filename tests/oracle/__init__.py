"""An independent, deliberately naive oracle of the customer profile (``docs/profile.md``).

It is written from the documentation alone, without reading or importing ``profiles/``: comparing the
two (:func:`diff_profiles`) catches bugs in either, and every disagreement is a question for the doc.
"""

from tests.oracle.compare import diff_profiles
from tests.oracle.profiles import OracleSettings, build_profiles

__all__ = ["OracleSettings", "build_profiles", "diff_profiles"]
