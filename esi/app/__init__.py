"""The parts behind the Gradio demo (`app.py`): reading records, running the model, the sample index.

Research software, not a diagnostic device.
"""
