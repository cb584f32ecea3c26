"""The model as an interatomic potential: molecular dynamics (``md``), relaxations (``relax``),
what they watch each step (``monitors``: stop rules, logs, drift) and their trajectory files
(``trajectory``: resume, open)."""
