"""Inputs: prompt sets, chat templates, prompt transforms, and which token ids get scored."""
