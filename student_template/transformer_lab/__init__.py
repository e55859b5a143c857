"""transformer_lab: the Transformer assignment package. What each function and class must do is in API.md
(in the student kit: kit/assignment/API.md); the written questions are in answers.ipynb."""
