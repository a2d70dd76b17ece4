-- Q7: X value of one gene for every cell of one donor (0 where not stored: the x_dense view).
-- The donor's cells and the gene become row and column selections on X through the joins'
-- dynamic filters (the gene's column of a CSC copy of X when the store has one).
-- The value is widened to DOUBLE so the CSV carries the float32's exact value, as the anchors do.
SELECT o.obs_name AS barcode, CAST(d.value AS DOUBLE) AS value
FROM atlas.x_dense d JOIN atlas.obs o USING (obs_id) JOIN atlas.var v USING (var_id)
WHERE o.donor_id = ${q7_donor} AND v.var_name = ${q7_gene};
