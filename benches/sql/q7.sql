-- Q7: X value of gene MS4A1 for every cell of the median donor (0 where not stored).
-- The donor's cells become a row selection on X through the inner join (dynamic filter).
WITH cells AS (SELECT obs_id, obs_name FROM atlas.obs WHERE donor_id = '${DONOR}'),
     gene AS (SELECT var_id FROM atlas.var WHERE var_name = 'MS4A1'),
     hits AS (SELECT x.obs_id, x.value FROM atlas.x x JOIN cells USING (obs_id) JOIN gene USING (var_id))
SELECT c.obs_name AS barcode, coalesce(h.value, 0) AS value
FROM cells c LEFT JOIN hits h USING (obs_id)
ORDER BY barcode;
