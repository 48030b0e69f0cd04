"""Grid expansion, stage identity, the stage graph, the artifact store and the launchers."""
