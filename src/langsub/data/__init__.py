"""Stage 1, the data: corpus files and splits (`corpus`), hub streaming (`hub`), and the
LightningDataModule that serves identification, training and evaluation blocks."""
