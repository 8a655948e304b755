"""What the command-line tools in ``tools/`` share: argument handling, config checks, the
launchers' set-up (:mod:`.launch`), ``--cfg-options`` spelled back (:mod:`.cfg_options`), one
live run per work dir (:mod:`.work_dir_lock`). Where the tools themselves are:
:mod:`mmtlalign.paths`."""
