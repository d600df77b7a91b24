"""Constants of the GROMACS/OpenMM export: target files, water models, box padding, cut-off.

Kept apart from :mod:`backmap_plugin.gromacs.export` and free of imports, so
that the ``backmap export`` parser reads its choices and defaults without
loading numpy or OpenMM.
"""

#: Files written by :func:`~backmap_plugin.gromacs.export.export` for each target.
EXPORT_FILES = {"gromacs": ("topol.top", "conf.gro"), "openmm": ("system.xml", "state.xml", "model.pdb")}
#: Water models the export can add: force-field file (used with
#: ``amber14-all.xml``) and the geometry ``Modeller.addSolvent`` builds.
WATER_MODELS = {
    "tip3p": ("amber14/tip3p.xml", "tip3p"),
    "tip3pfb": ("amber14/tip3pfb.xml", "tip3p"),
    "opc3": ("amber14/opc3.xml", "tip3p"),
    "spce": ("amber14/spce.xml", "spce"),
}
#: Space between the structure and the box faces (nm).
DEFAULT_PADDING = 1.0
#: Real-space cut-off of the PME system written with water (nm).
PME_CUTOFF = 1.0
