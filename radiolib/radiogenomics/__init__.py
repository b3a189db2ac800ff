"""The radiogenomic map: the paper's Fig. 4 measured, and the conventional three-step map beside it.

Import the submodules (``from radiolib.radiogenomics import codes``):

* :mod:`~radiolib.radiogenomics.codes`: gene codes phi(g) as representations, t-SNE, clusters,
  trait probes, gene attribution, interpolation between two patients' genes;
* :mod:`~radiolib.radiogenomics.conventional`: the conventional map's three steps (metagenes,
  radiomics, Spearman + FDR), the map of a curated cohort, the map as a representation;
* :mod:`~radiolib.radiogenomics.reference`: the conventional map on the real reference data
  shipped with radiolib, and its check against the order of enrolment;
* :mod:`~radiolib.radiogenomics.ground_truth`: the phantom's truth about a cohort, both maps read as
  gene-trait links, and their scoring against the truth;
* :mod:`~radiolib.radiogenomics.scoring`: every number of the map for a study run, over seeds,
  and the signal sweep read from the runs notebook 02 trained.

Nothing here trains a GAN: trained runs are read through :mod:`radiolib.runs`.
"""
