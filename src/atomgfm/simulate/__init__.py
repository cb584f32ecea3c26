"""The model as an interatomic potential: molecular dynamics (``md``), relaxations (``relax``) and
what they watch each step (``monitors``: stop rules, logs, drift)."""
