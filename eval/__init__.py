"""Evaluation: CMExam generation (accuracy, weighted F1), MMLU and CMMLU 5-shot.

Needs only a Hugging Face model directory; imports nothing of medtrain but data_prep's prompt templates, so
training and evaluation render prompts with the same code.
"""
