# COCO scale (R50-FPN, 600 px, 1x): focal loss on every anchor (gamma 2, alpha .25). The same
# run as table1b_fl_gamma2_alpha25.py, under the negatives grid's name.
_base_ = '../ablations/table1b_fl_gamma2_alpha25.py'
