# COCO scale (R50-FPN, 600 px, 1x), no mining: alpha-balanced sigmoid cross entropy on every
# anchor (gamma 0, alpha .75, the paper's best alpha for CE in Table 1a). The same run as
# table1a_ce_alpha75.py, under the negatives grid's name.
_base_ = '../ablations/table1a_ce_alpha75.py'
