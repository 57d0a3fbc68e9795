"""Stage 2, the neurons: count activations (`counting`), cache the statistics (`cache`),
select with LAPE's maths (`lape`, pure functions), read and write masks (`masks`), and
`identify` = a mask file, or cached-or-counted statistics, then selection."""
