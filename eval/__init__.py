"""Evaluation: CMExam generation (accuracy, weighted F1), MMLU and CMMLU 5-shot, MedQA and MedMCQA.

Needs only a Hugging Face model directory; imports only core, whose prompt templates and benchmark schemas prep
uses too, so training and evaluation read the data and render prompts with the same code.
"""
