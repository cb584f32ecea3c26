"""The data contract: every field of a batch is named once, here.

A batch is a plain ``dict[str, Tensor]``. Each constant below carries ``(shape) | meaning | unit``.
The sets at the bottom say which fields are per-atom, per-edge or per-structure; collation reads
those sets and nothing else needs to know which fields exist.
"""

from __future__ import annotations

# --- geometry and composition -------------------------------------------------------------
POSITIONS = "positions"  # (n_atoms, 3) float | Cartesian positions | Å
ATOMIC_NUMBERS = "atomic_numbers"  # (n_atoms,) int64 | element of each atom | -
CELL = "cell"  # (n_structs, 3, 3) float | lattice vectors as rows (zeros if no pbc) | Å
PBC = "pbc"  # (n_structs, 3) bool | periodic along each cell vector | -
CHARGE = "charge"  # (n_structs,) float | total charge of the structure | e
SPIN = "spin"  # (n_structs,) float | spin multiplicity 2S+1 (0 = not given) | -
N_ATOMS = "n_atoms"  # (n_structs,) int64 | atoms per structure | -
DATASET = "dataset"  # (n_structs,) int64 | dataset (head) id from the registry | -
BATCH = "batch"  # (n_atoms,) int64 | structure index of each atom | -

# --- graph ---------------------------------------------------------------------------------
EDGE_INDEX = "edge_index"  # (2, n_edges) int64 | row 0 centre atom i, row 1 neighbour j | -
# (n_edges, 3) float | integer lattice shifts S, with r_ij = R_j - R_i + S·cell | -
CELL_SHIFTS = "cell_shifts"
# (2, n_triplets) int64 | pairs of edges (k→j, j→i) meeting at atom j: row 0 the edge k→j (as an
# index into EDGE_INDEX), row 1 the edge j→i | -   (built only for backbones that ask for angles)
TRIPLET_INDEX = "triplet_index"

# --- labels (targets) and their presence masks --------------------------------------------
ENERGY = "energy"  # (n_structs,) float | total energy | eV
FORCES = "forces"  # (n_atoms, 3) float | -dE/dR | eV/Å
STRESS = "stress"  # (n_structs, 3, 3) float | (1/V) dE/dε, ASE sign convention | eV/Å³
HAS_ENERGY = "has_energy"  # (n_structs,) bool | energy label present | -
HAS_FORCES = "has_forces"  # (n_structs,) bool | forces label present | -
HAS_STRESS = "has_stress"  # (n_structs,) bool | stress label present | -
# (n_structs,) float | structure-level property label: a scalar (regression) or 0/1 (binary
# classification); present only in graphs of fine-tuning runs with property tasks | property's unit
PROPERTY = "property"
HAS_PROPERTY = "has_property"  # (n_structs,) bool | property label present | -

# --- model outputs that are not labels ----------------------------------------------------
ATOM_ENERGY = "atom_energy"  # (n_atoms,) float | per-atom energy incl. element reference | eV
# (n_structs,) float64 | the reference (baseline) part of ENERGY: element + charge/spin terms | eV
REFERENCE_ENERGY = "reference_energy"
NODE_SCALARS = "node_scalars"  # (n_atoms, F) float | invariant node features from the backbone | -
NODE_VECTORS = "node_vectors"  # (n_atoms, 3, F) float | equivariant vector features | -
# (n_atoms, irreps.dim) float | e3nn irreps features; the backbone declares ``irreps_out`` | -
NODE_IRREPS = "node_irreps"
# (n_atoms,) float | isolation gate 1 - exp(-Σ_j f_cut(r_ij)): 0 for an atom without neighbours | -
GATE = "gate"
# (n_structs, n_heads) float64 | energy of every chosen head (multi-head readout) | eV
HEAD_ENERGY = "head_energy"
# (n_atoms, 3, n_heads) float | forces of every chosen head (multi-head readout) | eV/Å
HEAD_FORCES = "head_forces"
# (n_structs, n_heads) float64 | weight of each head in ENERGY (one-hot: each structure's own) | -
HEAD_WEIGHTS = "head_weights"
# (n_structs,) float64 | each structure's own property head: the value (regression) or the logit
# of class 1 (binary classification); 0 where its dataset's head is an energy head | property's unit
PROPERTY_OUTPUT = "property_output"
# (n_structs,) int64 | what PROPERTY_OUTPUT is: 0 none (energy head), 1 regression, 2 classification
PROPERTY_TASK = "property_task"

PER_ATOM = frozenset({POSITIONS, ATOMIC_NUMBERS, BATCH, FORCES})
PER_EDGE = frozenset({CELL_SHIFTS})
PER_TRIPLET: frozenset[str] = frozenset()
# Index fields, (2, n) int64 each: collation concatenates them along the last axis and offsets
# them by the running count of what they index, which is the last-axis length of the named field
# (atoms: ATOMIC_NUMBERS; edges: EDGE_INDEX; triplets: TRIPLET_INDEX).
INDEX_FIELDS = {EDGE_INDEX: ATOMIC_NUMBERS, TRIPLET_INDEX: EDGE_INDEX}
PER_STRUCTURE = frozenset(
    {CELL, PBC, CHARGE, SPIN, N_ATOMS, DATASET, ENERGY, STRESS, HAS_ENERGY, HAS_FORCES, HAS_STRESS,
     PROPERTY, HAS_PROPERTY}
)
LABELS = (ENERGY, FORCES, STRESS)
LABEL_MASK = {ENERGY: HAS_ENERGY, FORCES: HAS_FORCES, STRESS: HAS_STRESS}
