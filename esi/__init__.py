"""ESI: the Cardio Query Assistant, pretraining, evaluation and demo around the `modeling_esi` model.

Layers (nothing imports upward; nothing imports a command-line entry module):

    modeling_esi  <-  esi.constants, esi.run_folder, esi.command_line, esi.checksum, esi.text_encoder, esi.hub
                  <-  esi.data, esi.knowledge
                  <-  esi.plot
                  <-  esi.cqa | esi.train | esi.eval   (siblings: they do not import each other)
                  <-  esi.app, esi.publish, esi.demo
                  <-  benchmarks

`tests/repo/test_package_layers.py` enforces it.

Research software, not a diagnostic device.
"""
