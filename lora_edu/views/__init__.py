"""Figures and widgets that show what ``lora_edu.core`` computes."""
