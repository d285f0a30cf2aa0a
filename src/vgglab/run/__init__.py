"""A training run's directory and everything in it, in one place: the names of its files (:mod:`.files`),
making and locking the directory (:mod:`.directory`, :mod:`.lock`), its checkpoints (:mod:`.checkpoint`),
the metadata its weights carry (:mod:`.meta`), the record of its splits (:mod:`.record`), the wall clock of
its phases (:mod:`.clock`) and the context a run trains in (:mod:`.context`). A finished run, read back as
objects, is :func:`vgglab.load_run` (``vgglab.runs``)."""
