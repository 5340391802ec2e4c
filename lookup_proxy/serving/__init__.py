"""``lookup-proxy serve``: one serving process (:mod:`.process`: the app on its port until a
signal, then the drain), or a master and N such processes on one port (:mod:`.master`), both
made from the same command-line options (:mod:`.options`)."""
