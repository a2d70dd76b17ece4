-- Q1: cells per cell_type.
SELECT cell_type, count(*) AS n_cells
FROM atlas.obs
GROUP BY cell_type;
