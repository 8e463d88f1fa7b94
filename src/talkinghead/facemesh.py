"""MediaPipe FaceMesh landmark indices the pipeline names, in one place (plain numbers, so importing them does not
import mediapipe). tests/test_core.py checks them against mediapipe's own FACEMESH_LIPS."""

from __future__ import annotations

# The 40 points of FACEMESH_LIPS (outer + inner lip contours), sorted.
LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269, 270,
        291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
# Inner-lip loop, upper and lower halves from mouth corner 78 to mouth corner 308.
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
# (upper, lower) inner-lip pairs facing each other: the 9 non-corner columns of the loop above.
INNER_LIP_PAIRS = tuple(zip(INNER_UPPER[1:-1], INNER_LOWER[1:-1]))
