"""Offline training and evaluation: fine-tuning and distillation recipes, metrics, baselines, blender fit."""
