"""Visual explanations (Grad-CAM family) and their metrics; arrives with the explanations capability."""
