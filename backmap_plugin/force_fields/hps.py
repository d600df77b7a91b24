"""One-bead-per-residue IDP model of the HPS / CALVADOS family as an OpenMM System.

Energy terms (each in its own force group, :data:`HPS_FORCE_GROUPS`):

* harmonic bonds between consecutive residues, ``0.5*k*(r - b)^2`` with
  ``b`` = 0.38 nm and ``k`` = 8033 kJ/mol/nm^2;
* Ashbaugh-Hatch short-range pair potential with per-residue ``sigma`` and
  ``lambda`` (arithmetic means per pair), ``epsilon`` = 0.8368 kJ/mol,
  Lennard-Jones shifted to zero at the 2.0 nm cutoff::

      U = 4 eps (LJ(r) - lambda LJ(rc)) + eps (1 - lambda)   r <= 2^(1/6) sigma
      U = 4 eps lambda (LJ(r) - LJ(rc))                       otherwise
      LJ(r) = (sigma/r)^12 - (sigma/r)^6

* Debye-Hueckel (screened Coulomb) electrostatics, shifted to zero at the
  4.0 nm cutoff, ``U = q_i q_j A (exp(-kappa r)/r - exp(-kappa rc)/rc)``
  with ``A = e^2 N_A / (4 pi eps0 eps_r(T))`` and the Debye screening
  constant ``kappa`` from the ionic strength and temperature; the relative
  permittivity of water ``eps_r(T)`` follows the empirical fit used by
  CALVADOS (:func:`water_relative_permittivity`).

Bonded pairs are excluded from both pair terms. Parameters (lambda, sigma,
charge, mass) are the CALVADOS 2 values (Tesei & Lindorff-Larsen, Open
Research Europe 2, 94 (2022)) in ``hps_parameters.csv``; the N- and
C-terminal residues carry an extra +1 and -1 charge, as in CALVADOS.

The force builders (:func:`harmonic_bond_force`, :func:`ashbaugh_hatch_force`,
:func:`debye_huckel_force`), :func:`periodic_box_vectors`,
:func:`read_parameter_table` and :func:`cg_topology` are shared with
:mod:`.calvados3`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = [
    "AH_CUTOFF",
    "AH_EPSILON",
    "BOND_K",
    "BOND_LENGTH",
    "DH_CUTOFF",
    "HPS_FORCE_GROUPS",
    "ResidueParameters",
    "ashbaugh_hatch_energy",
    "ashbaugh_hatch_force",
    "cg_topology",
    "create_hps_system",
    "debye_huckel_energy",
    "debye_huckel_force",
    "debye_huckel_parameters",
    "harmonic_bond_force",
    "load_hps_parameters",
    "periodic_box_vectors",
    "random_coil",
    "read_parameter_table",
    "water_relative_permittivity",
]

#: Ashbaugh-Hatch energy scale, kJ/mol (CALVADOS).
AH_EPSILON = 0.8368
#: Ashbaugh-Hatch cutoff, nm (CALVADOS 2).
AH_CUTOFF = 2.0
#: Debye-Hueckel cutoff, nm (CALVADOS).
DH_CUTOFF = 4.0
#: Harmonic bond length (nm) and force constant (kJ/mol/nm^2).
BOND_LENGTH = 0.38
BOND_K = 8033.0
#: Force group of each term of :func:`create_hps_system`.
HPS_FORCE_GROUPS = {"bonds": 0, "ashbaugh_hatch": 1, "debye_huckel": 2}

# CODATA 2018 constants.
_ELEMENTARY_CHARGE = 1.602176634e-19  # C
_VACUUM_PERMITTIVITY = 8.8541878128e-12  # F/m
_AVOGADRO = 6.02214076e23  # 1/mol
_BOLTZMANN = 1.380649e-23  # J/K


@dataclass(frozen=True)
class ResidueParameters:
    """Model parameters of one amino acid.

    Attributes
    ----------
    three : str
        Three-letter name.
    mass : float
        Bead mass, g/mol.
    lambda_ : float
        Stickiness (hydropathy) of the Ashbaugh-Hatch term.
    sigma : float
        Bead diameter, nm.
    charge : float
        Charge, elementary charges.
    """

    three: str
    mass: float
    lambda_: float
    sigma: float
    charge: float


def read_parameter_table(path=None, packaged="hps_parameters.csv") -> dict:
    """Read per-residue parameters from a CSV file or a packaged table.

    Parameters
    ----------
    path : str or os.PathLike, optional
        CSV with columns ``one, three, mass, lambda, sigma, charge`` (other
        columns are ignored); lines starting with ``#`` are comments.
    packaged : str, optional
        File name of the table in this package read when ``path`` is None.

    Returns
    -------
    dict
        One-letter code -> :class:`ResidueParameters`.
    """
    if path is None:
        text = resources.files(__package__).joinpath(packaged).read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    table = {}
    for row in rows:
        table[row["one"].strip().upper()] = ResidueParameters(
            three=row["three"].strip().upper(),
            mass=float(row["mass"]),
            lambda_=float(row["lambda"]),
            sigma=float(row["sigma"]),
            charge=float(row["charge"]),
        )
    return table


def load_hps_parameters(path=None) -> dict:
    """Read per-residue parameters from a CSV file.

    Parameters
    ----------
    path : str or os.PathLike, optional
        CSV with columns ``one, three, mass, lambda, sigma, charge``; lines
        starting with ``#`` are comments. Default: the packaged
        ``hps_parameters.csv`` (CALVADOS 2).

    Returns
    -------
    dict
        One-letter code -> :class:`ResidueParameters`.
    """
    return read_parameter_table(path, "hps_parameters.csv")


def water_relative_permittivity(temperature: float) -> float:
    """Relative permittivity of water at a temperature (K).

    The empirical polynomial used by CALVADOS (after Akerlof & Oshry, J. Am.
    Chem. Soc. 72, 2844 (1950)): about 78.4 at 298 K.

    Parameters
    ----------
    temperature : float
        Kelvin.

    Returns
    -------
    float
    """
    t = float(temperature)
    return 5321.0 / t + 233.76 - 0.9297 * t + 0.1417e-2 * t * t - 0.8292e-6 * t**3


def debye_huckel_parameters(temperature: float, ionic_strength: float) -> tuple:
    """Prefactor and screening constant of the Debye-Hueckel term.

    Parameters
    ----------
    temperature : float
        Kelvin (positive).
    ionic_strength : float
        mol/L (not negative).

    Returns
    -------
    prefactor : float
        ``e^2 N_A / (4 pi eps0 eps_r)`` in kJ/mol nm.
    kappa : float
        Inverse Debye length, 1/nm.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature} K")
    if ionic_strength < 0:
        raise ValueError(f"ionic strength must not be negative, got {ionic_strength} M")
    eps_r = water_relative_permittivity(temperature)
    prefactor = _ELEMENTARY_CHARGE**2 * _AVOGADRO / (4 * math.pi * _VACUUM_PERMITTIVITY * eps_r) * 1e9 / 1e3
    number_density = 2.0 * ionic_strength * 1e3 * _AVOGADRO  # 2 I in ions per m^3
    thermal = _VACUUM_PERMITTIVITY * eps_r * _BOLTZMANN * temperature
    kappa_m = math.sqrt(number_density * _ELEMENTARY_CHARGE**2 / thermal)
    return prefactor, kappa_m * 1e-9


def ashbaugh_hatch_energy(r, sigma, lambda_, epsilon=AH_EPSILON, cutoff=AH_CUTOFF):
    """Ashbaugh-Hatch pair energy (kJ/mol) as used by :func:`create_hps_system`.

    Parameters
    ----------
    r : array_like
        Distances, nm.
    sigma, lambda_ : array_like
        Pair sigma (nm) and lambda (broadcast with ``r``).
    epsilon : float, optional
        kJ/mol.
    cutoff : float, optional
        nm; zero beyond.

    Returns
    -------
    numpy.ndarray
    """
    r, s, lam = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (r, sigma, lambda_)))
    lj = (s / r) ** 12 - (s / r) ** 6
    shift = (s / cutoff) ** 12 - (s / cutoff) ** 6
    inner = 4 * epsilon * (lj - lam * shift) + epsilon * (1 - lam)
    outer = 4 * epsilon * lam * (lj - shift)
    return np.where(r > cutoff, 0.0, np.where(r <= 2 ** (1 / 6) * s, inner, outer))


def debye_huckel_energy(r, qq, prefactor, kappa, cutoff=DH_CUTOFF):
    """Shifted Debye-Hueckel pair energy (kJ/mol).

    Parameters
    ----------
    r : array_like
        Distances, nm.
    qq : array_like
        Charge products (elementary charges squared).
    prefactor, kappa : float
        From :func:`debye_huckel_parameters`.
    cutoff : float, optional
        nm; zero beyond.

    Returns
    -------
    numpy.ndarray
    """
    r = np.asarray(r, dtype=np.float64)
    u = np.asarray(qq) * prefactor * (np.exp(-kappa * r) / r - np.exp(-kappa * cutoff) / cutoff)
    return np.where(r > cutoff, 0.0, u)


def random_coil(n, bond=BOND_LENGTH, min_distance=0.6, seed=0):
    """Self-avoiding random-coil chain of ``n`` beads.

    Consecutive beads are ``bond`` apart; every other pair is at least
    ``min_distance`` apart. A persistent random walk (deterministic for a
    seed); when it gets stuck, a planar zig-zag chain is returned instead.

    Parameters
    ----------
    n : int
        Number of beads.
    bond : float, optional
        Bead spacing, nm.
    min_distance : float, optional
        Smallest distance between non-consecutive beads, nm (below
        ``2*bond``).
    seed : int, optional
        Random seed.

    Returns
    -------
    numpy.ndarray, shape (n, 3)
        Coordinates in nm, centred at the origin.
    """
    rng = np.random.default_rng(seed)
    xyz = np.zeros((n, 3))
    direction = np.array([1.0, 0.0, 0.0])
    for i in range(1, n):
        for _ in range(500):
            trial = direction + 1.2 * _unit(rng.normal(size=3))
            step = bond * _unit(trial)
            candidate = xyz[i - 1] + step
            if i < 2 or np.min(np.linalg.norm(xyz[: i - 1] - candidate, axis=1)) >= min_distance:
                xyz[i] = candidate
                direction = _unit(step)
                break
        else:
            return _zigzag(n, bond, min_distance)
    return xyz - xyz.mean(axis=0)


def _unit(v):
    return v / np.linalg.norm(v)


def _zigzag(n, bond, min_distance):
    """Planar zig-zag with the i, i+2 distance equal to ``max(min_distance, 1.6 bond)``."""
    half = 0.5 * max(min_distance, 1.6 * bond)
    rise = math.sqrt(max(bond**2 - half**2, 0.0))
    xyz = np.zeros((n, 3))
    xyz[:, 0] = half * np.arange(n)
    xyz[1::2, 1] = rise
    return xyz - xyz.mean(axis=0)


def cg_topology(names, chain_id="A", first_id=1, chain_ids=None, residue_ids=None, chain_index=None,
                insertion_codes=None):
    """CA-only OpenMM topology: one residue per bead, atom ``CA`` (carbon).

    Parameters
    ----------
    names : sequence of str
        Three-letter residue names.
    chain_id : str, optional
        Chain identifier of every bead (when ``chain_ids`` is None).
    first_id : int, optional
        Number of the first residue (when ``residue_ids`` is None).
    chain_ids : sequence of str, optional
        Chain identifier of each bead.
    residue_ids : sequence of str or int, optional
        Residue number of each bead.
    chain_index : sequence of int, optional
        Chain of each bead: a new chain starts wherever it changes (default:
        wherever the chain identifier changes).
    insertion_codes : sequence of str, optional
        Insertion code of each bead's residue ('' for none, the default), so
        that residues 82, 82A and 82B of a structure keep their ids.

    Returns
    -------
    openmm.app.Topology
        Consecutive beads of a chain bonded.
    """
    from openmm.app import Topology, element

    n = len(names)
    chain_ids = [chain_id] * n if chain_ids is None else list(chain_ids)
    residue_ids = [first_id + k for k in range(n)] if residue_ids is None else list(residue_ids)
    chain_index = chain_ids if chain_index is None else list(chain_index)
    codes = [""] * n if insertion_codes is None else list(insertion_codes)
    if not len(chain_ids) == len(residue_ids) == len(chain_index) == len(codes) == n:
        raise ValueError(f"{n} names but {len(chain_ids)} chain ids, {len(residue_ids)} residue ids, "
                         f"{len(chain_index)} chain indices and {len(codes)} insertion codes")
    top = Topology()
    chain = None
    previous = None
    for k, name in enumerate(names):
        if chain is None or chain_index[k] != chain_index[k - 1]:
            chain = top.addChain(chain_ids[k])
            previous = None
        residue = top.addResidue(name, chain, str(residue_ids[k]), codes[k])
        atom = top.addAtom("CA", element.carbon, residue)
        if previous is not None:
            top.addBond(previous, atom)
        previous = atom
    return top


def _value(quantity, unit_):
    from openmm import unit

    return quantity.value_in_unit(unit_) if unit.is_quantity(quantity) else float(quantity)


def _box_vectors(box):
    from openmm import Vec3, unit

    if unit.is_quantity(box):
        box = box.value_in_unit(unit.nanometer)
    arr = np.asarray(box, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(3, float(arr))
    if arr.shape == (3,):
        arr = np.diag(arr)
    if arr.shape != (3, 3):
        raise ValueError(f"box must be an edge length, three edge lengths or 3x3 vectors (nm), got shape {arr.shape}")
    return [Vec3(*row) * unit.nanometer for row in arr.tolist()]


def periodic_box_vectors(box, cutoff=DH_CUTOFF):
    """Periodic box vectors of a CG system, checked against the pair cutoff.

    Parameters
    ----------
    box : float, sequence or openmm.unit.Quantity or None
        An edge length, three edge lengths or three vectors (nm); None for
        a non-periodic system.
    cutoff : float, optional
        Longest pair cutoff (nm): every edge must be at least twice as long.

    Returns
    -------
    list of openmm.Vec3 quantities, or None
        None when ``box`` is None.
    """
    from openmm import unit

    if box is None:
        return None
    vectors = _box_vectors(box)
    shortest = min(v[k].value_in_unit(unit.nanometer) for k, v in enumerate(vectors))
    if shortest < 2 * cutoff:
        raise ValueError(
            f"periodic box edge {shortest:.2f} nm is shorter than twice the {cutoff} nm Debye-Hueckel cutoff"
        )
    return vectors


def set_topology_box(topology, vectors) -> None:
    """Give an OpenMM ``Topology`` the box ``vectors`` (from :func:`periodic_box_vectors`).

    As one ``Quantity`` of three ``Vec3`` rows, the form OpenMM's writers
    read (``PDBFile.writeFile`` fails on a list of quantities, the form
    ``System.getDefaultPeriodicBoxVectors`` returns).
    """
    from openmm import unit

    topology.setPeriodicBoxVectors(unit.Quantity([v.value_in_unit(unit.nanometer) for v in vectors], unit.nanometer))


def _pair_method(periodic):
    import openmm

    return openmm.CustomNonbondedForce.CutoffPeriodic if periodic else openmm.CustomNonbondedForce.CutoffNonPeriodic


def harmonic_bond_force(pairs, lengths, k, periodic=False, name="HPSBonds"):
    """Harmonic bonds ``0.5*k*(r - b)^2`` between bead pairs.

    Parameters
    ----------
    pairs : sequence of (int, int)
        Bead indices.
    lengths : float or sequence of float
        Rest length of every pair, or one for all (nm).
    k : float
        Force constant, kJ/mol/nm^2.
    periodic : bool, optional
        Use the minimum image.
    name : str, optional
        Force name.

    Returns
    -------
    openmm.HarmonicBondForce
    """
    import openmm

    lengths = np.broadcast_to(np.asarray(lengths, dtype=np.float64), (len(pairs),))
    force = openmm.HarmonicBondForce()
    force.setName(name)
    for (i, j), b in zip(pairs, lengths.tolist(), strict=True):
        force.addBond(int(i), int(j), b, float(k))
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    return force


def ashbaugh_hatch_force(sigmas, lambdas, periodic=False, epsilon=AH_EPSILON, cutoff=AH_CUTOFF):
    """Ashbaugh-Hatch pair force (see :func:`ashbaugh_hatch_energy`), one particle per bead.

    Parameters
    ----------
    sigmas, lambdas : sequence of float
        Per-bead diameter (nm) and stickiness; pairs take arithmetic means.
    periodic : bool, optional
        Periodic cutoff (else non-periodic).
    epsilon : float, optional
        kJ/mol.
    cutoff : float, optional
        nm.

    Returns
    -------
    openmm.CustomNonbondedForce
        No exclusions yet.
    """
    import openmm

    ah = openmm.CustomNonbondedForce(
        "eps*select(step(r - 2^(1/6)*s), 4*l*(lj - shift), 4*(lj - l*shift) + 1 - l);"
        "lj = (s/r)^12 - (s/r)^6; shift = (s/rc)^12 - (s/rc)^6;"
        "s = 0.5*(s1 + s2); l = 0.5*(l1 + l2)"
    )
    ah.setName("AshbaughHatch")
    ah.addGlobalParameter("eps", float(epsilon))
    ah.addGlobalParameter("rc", float(cutoff))
    ah.addPerParticleParameter("s")
    ah.addPerParticleParameter("l")
    for s, lam in zip(sigmas, lambdas, strict=True):
        ah.addParticle([float(s), float(lam)])
    ah.setCutoffDistance(float(cutoff))
    ah.setNonbondedMethod(_pair_method(periodic))
    return ah


def debye_huckel_force(charges, prefactor, kappa, periodic=False, cutoff=DH_CUTOFF):
    """Shifted Debye-Hueckel pair force (see :func:`debye_huckel_energy`), one particle per bead.

    Parameters
    ----------
    charges : sequence of float
        Per-bead charge, elementary charges.
    prefactor, kappa : float
        From :func:`debye_huckel_parameters`.
    periodic : bool, optional
        Periodic cutoff (else non-periodic).
    cutoff : float, optional
        nm.

    Returns
    -------
    openmm.CustomNonbondedForce
        No exclusions yet.
    """
    import openmm

    dh = openmm.CustomNonbondedForce("A*q1*q2*(exp(-kappa*r)/r - exp(-kappa*rcdh)/rcdh)")
    dh.setName("DebyeHueckel")
    dh.addGlobalParameter("A", float(prefactor))
    dh.addGlobalParameter("kappa", float(kappa))
    dh.addGlobalParameter("rcdh", float(cutoff))
    dh.addPerParticleParameter("q")
    for q in charges:
        dh.addParticle([float(q)])
    dh.setCutoffDistance(float(cutoff))
    dh.setNonbondedMethod(_pair_method(periodic))
    return dh


def _sequence_letters(sequence, table):
    letters = "".join(str(sequence).split()).upper()
    if not letters:
        raise ValueError("empty sequence")
    unknown = sorted(set(letters) - set(table))
    if unknown:
        raise ValueError(f"unknown residue letter(s) {', '.join(unknown)} in sequence; known: {''.join(sorted(table))}")
    return letters


def create_hps_system(sequence, ionicStrength=0.15, temperature=298.0, box=None, terminalCharges=True,
                      parameters=None, seed=0):
    """HPS/CALVADOS one-bead-per-residue System for a sequence.

    Parameters
    ----------
    sequence : str
        One-letter amino-acid sequence (whitespace ignored).
    ionicStrength : float or openmm.unit.Quantity, optional
        mol/L when a plain number (default 0.15).
    temperature : float or openmm.unit.Quantity, optional
        Kelvin when a plain number (default 298); sets the dielectric
        constant of water and the Debye length.
    box : float, sequence or openmm.unit.Quantity, optional
        Periodic box (nm): an edge length, three edge lengths or three
        vectors. None (default) gives a non-periodic system.
    terminalCharges : bool, optional
        Add +1 to the first and -1 to the last residue (CALVADOS).
    parameters : str or os.PathLike, optional
        Parameter CSV (default: packaged CALVADOS 2 values).
    seed : int, optional
        Seed of the random-coil starting positions.

    Returns
    -------
    topology : openmm.app.Topology
        One chain ``A``, residues numbered from 1 with three-letter names,
        one atom ``CA`` (element carbon) per residue.
    system : openmm.System
        Forces in the groups of :data:`HPS_FORCE_GROUPS`.
    positions : openmm.unit.Quantity
        Random-coil chain, 0.38 nm spacing, non-consecutive beads at least
        0.6 nm apart.
    """
    import openmm
    from openmm import unit

    table = load_hps_parameters(parameters)
    letters = _sequence_letters(sequence, table)
    params = [table[c] for c in letters]
    temperature = _value(temperature, unit.kelvin)
    ionic = _value(ionicStrength, unit.molar)
    prefactor, kappa = debye_huckel_parameters(temperature, ionic)
    charges = np.array([p.charge for p in params], dtype=np.float64)
    if terminalCharges:
        charges[0] += 1.0
        charges[-1] -= 1.0

    system = openmm.System()
    for p in params:
        system.addParticle(p.mass)
    vectors = periodic_box_vectors(box)
    periodic = vectors is not None
    if periodic:
        system.setDefaultPeriodicBoxVectors(*vectors)

    pairs = [(i, i + 1) for i in range(len(params) - 1)]
    bonds = harmonic_bond_force(pairs, BOND_LENGTH, BOND_K, periodic, name="HPSBonds")
    ah = ashbaugh_hatch_force([p.sigma for p in params], [p.lambda_ for p in params], periodic)
    dh = debye_huckel_force(charges, prefactor, kappa, periodic)
    for force in (ah, dh):
        force.createExclusionsFromBonds(pairs, 1)
    for force, group in ((bonds, "bonds"), (ah, "ashbaugh_hatch"), (dh, "debye_huckel")):
        force.setForceGroup(HPS_FORCE_GROUPS[group])
        system.addForce(force)

    topology = cg_topology([p.three for p in params])
    if periodic:
        set_topology_box(topology, vectors)
    xyz = random_coil(len(params), seed=seed)
    positions = unit.Quantity([openmm.Vec3(*row) for row in xyz.tolist()], unit.nanometer)
    return topology, system, positions
