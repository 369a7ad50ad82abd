"""The browser annotator: a local web page on which a person paints the shots' labels.

`store` is the shots folder as the annotator reads and writes it (shots by index, label files checked as the
`fewshot` stage reads them, written atomically, each shot's state); `server` is the HTTP server (standard
library, a token on every request) that serves the page in `static/` and the store; `assist` trains the
configured head on the labelled shots and predicts the others, for the person to correct.
"""
