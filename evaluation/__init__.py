"""Downstream evaluation of ESI encoders: label-fraction sampling, classification (linear probe, LoRA,
full fine-tuning), subject identification, zero-shot classification and captioning, and reports.

Research software, not a diagnostic device.
"""
