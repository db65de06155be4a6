"""ESI: the Cardio Query Assistant, pretraining, evaluation and demo around the `modeling_esi` model.

Layers (nothing imports upward; nothing imports a command-line entry module):

    modeling_esi  <-  esi.constants, esi.text_encoder, esi.hub, esi.data
                  <-  esi.cqa, esi.train, esi.eval, esi.plot
                  <-  esi.app, esi.publish, esi.demo, benchmarks

Research software, not a medical device.
"""
