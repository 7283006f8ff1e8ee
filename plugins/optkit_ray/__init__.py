"""Built-in plugin ``optkit_ray``: the ``ray`` executor (N gradient evaluations on Ray actors)
and :func:`optkit_ray.cells.run_cells_on_ray` (whole benchmark cells as Ray tasks)."""
