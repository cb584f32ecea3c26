"""The demo corpus: small datasets labelled by real calculators (ASE EMT, GFN-xTB through tblite,
a shipped PySCF set). Kept outside the core data package: nothing in ``atomgfm.data`` needs it."""
